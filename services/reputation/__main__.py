"""`python -m services.reputation`: connect, HELO, AUTH, MAIL and RCPT checks."""

from services.reputation.service import Reputation
from shared.service import run

run("reputation", Reputation)
