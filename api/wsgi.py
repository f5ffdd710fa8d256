"""The WSGI entry point for gunicorn: ``gunicorn -c python:api.gunicorn_conf api.wsgi:app``."""

from api.app import create_app
from api.config import load_settings

app = create_app(load_settings())
