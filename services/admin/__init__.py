"""The admin service: the operator's HTTP API over the lists, settings,
decision records and audit trail (SPEC §6)."""
