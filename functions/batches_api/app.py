"""The batches API function: /v1/batches and /admin behind API Gateway, through Mangum."""

from __future__ import annotations

from functions.batches_api import admin
from functions.batches_api.routes import router
from shared.http.app import create_app
from shared.http.lambda_handler import lambda_handler

app = create_app(router, admin.router, title="batchgw batches")
handler = lambda_handler(app)
