"""What the functions log and what the template bills for when nothing asks for it."""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger

from batchgw import template
from shared.logs import TRANSPORT_LOGGERS, share_config


def test_functions_log_no_line_per_provider_request_but_keep_their_own_level() -> None:
    import httpx  # noqa: F401  # registered, as in a function that calls providers

    own = logging.getLogger("shared.polling")
    top = [logging.getLogger(n) for n in logging.root.manager.loggerDict if "." not in n]
    levels = [logger.level for logger in top]
    try:
        # a service of its own: Powertools keeps the level of the first Logger made for a service, and a
        # function imported earlier in this process made the `batchgw` one at the level of its environment
        share_config(Logger(service="batchgw-logs-test", level="INFO"))
        assert own.getEffectiveLevel() == logging.INFO
        for name in TRANSPORT_LOGGERS:
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
    finally:
        for logger, level in zip(top, levels, strict=True):
            logger.setLevel(level)


def test_every_fixed_monthly_item_and_tracing_has_a_switch() -> None:
    loaded = template.load_template()
    parameters, resources = loaded["Parameters"], loaded["Resources"]
    conditions = {"AWS::CloudWatch::Alarm": "AlarmsEnabled", "AWS::CloudWatch::Dashboard": "DashboardEnabled"}
    for logical_id, resource in resources.items():
        if resource["Type"] in conditions:
            assert resource.get("Condition") == conditions[resource["Type"]], logical_id
    assert parameters["EnableTracing"]["Default"] == "false"
    function_globals = loaded["Globals"]["Function"]
    assert function_globals["Tracing"] == {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}
    variables = function_globals["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingEnabled", "false", "true"]}
    assert variables["POWERTOOLS_METRICS_DISABLED"] == {"Fn::If": ["CustomMetricsEnabled", "false", "true"]}


def test_the_cold_start_benchmark_has_a_target_for_every_function() -> None:
    from bench.cold_start import TARGET_MS

    assert set(TARGET_MS) == {f.logical_id for f in template.functions()}
