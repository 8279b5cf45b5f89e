"""`python -m services.content`: end-of-DATA checks."""

from services.content.service import Content
from shared.service import run

run("content", Content)
