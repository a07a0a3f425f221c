"""The files API function: /v1/files and /v1/uploads behind API Gateway, through Mangum."""

from __future__ import annotations

from functions.files_api import uploads
from functions.files_api.routes import router
from shared.http.app import create_app
from shared.http.lambda_handler import lambda_handler

app = create_app(router, uploads.router, title="batchgw files")
handler = lambda_handler(app)
