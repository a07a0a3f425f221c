"""The files API function: /v1/files and /v1/uploads behind API Gateway, through Mangum."""

from __future__ import annotations

from mangum import Mangum

from functions.files_api import uploads
from functions.files_api.routes import router
from shared.http.app import create_app

app = create_app(router, uploads.router, title="batchgw files")
handler = Mangum(app, lifespan="off")
