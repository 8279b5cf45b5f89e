"""The fast parse of MAIL and RCPT paths gives what aiosmtpd's full RFC 5322
parse gives, and leaves every other form to it."""

from __future__ import annotations

from email._header_value_parser import get_angle_addr

import pytest

from services.ingress.smtp import plain_path

PLAIN = [
    "<alice@example.org>",
    "<alice@example.org> SIZE=2048",
    " <a.b+c_d=e@mail-1.example.org>  BODY=8BITMIME SMTPUTF8",
    "<alice@example.org>SIZE=1",
    "<o'brien#1!{x}~@x.example>",
    "<alice@localhost> ",
]
OTHER = [
    "<>",
    '<"quoted local"@example.org>',
    "<a..b@example.org>",
    "<.a@example.org>",
    "<a.@example.org>",
    "<a@[192.0.2.1]>",
    "<@relay.example:a@example.org>",
    "<a@example.org.>",
    "<a@-bad.example>",
    "<a@example..org>",
    "<jörg@example.org>",
    "alice@example.org",
    "<alice@example.org",
    "<a(comment)@example.org>",
]


@pytest.mark.parametrize("arg", PLAIN)
def test_a_plain_path_parses_as_the_full_parser_reads_it(arg: str) -> None:
    address, rest = get_angle_addr(arg)
    assert plain_path(arg) == (address.addr_spec, rest)


@pytest.mark.parametrize("arg", OTHER)
def test_any_other_form_is_left_to_the_full_parser(arg: str) -> None:
    assert plain_path(arg) is None
