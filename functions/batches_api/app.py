"""The batches API function: /v1/batches and /admin behind API Gateway, through Mangum."""

from __future__ import annotations

from mangum import Mangum

from functions.batches_api import admin
from functions.batches_api.routes import router
from shared.http.app import create_app

app = create_app(router, admin.router, title="batchgw batches")
handler = Mangum(app, lifespan="off")
