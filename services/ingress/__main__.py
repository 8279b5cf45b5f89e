"""`python -m services.ingress`: the SMTP listener and delivery worker."""

from services.ingress.service import Ingress
from shared.service import run

run("ingress", Ingress)
