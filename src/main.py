"""Entry point for gunicorn/uvicorn: `main:app` (run from src/, as in seed 004)."""
from analytics.main import create_app

app = create_app()
