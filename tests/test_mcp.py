"""The dashboard as a tool for agents: the `mcp` package's own client lists the app's tools (described by their
docstrings) and calls `check` on the default model."""

from __future__ import annotations

import ast
import asyncio
import os

import pytest

pytestmark = pytest.mark.slow


def mcp_client():
    try:
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client
    except ImportError:
        message = "The mcp package is not installed: pip install -r requirements.txt (it pins mcp)."
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run the MCP test, never skip it
        pytest.skip(message)
    return ClientSession, streamable_http_client


def test_mcp_client_lists_the_tools_and_calls_check(app_server):
    session_cls, connect = mcp_client()

    async def talk():
        async with connect(app_server["url"] + "gradio_api/mcp/") as (read, write, _), \
                session_cls(read, write) as session:
            await session.initialize()
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            called = await session.call_tool("check", {
                "model": "smollm2-135m-instruct", "candidate": "onnxruntime",
                "prompts": ["Why should one run machine learning models on-premises?"], "max_new_tokens": 8,
                "reach": 0})
            return tools, called

    tools, called = asyncio.run(talk())
    assert {"check", "compare_text", "compare_image"} <= set(tools), sorted(tools)
    assert "Is the candidate broken?" in tools["check"].description
    assert "Run one prompt greedily" in tools["compare_text"].description
    # The tool's parameters are /check's, which are CheckRequest's declared fields (the CLI's flags too).
    from arena.judging.check import CheckRequest

    declared = {info.name for info in CheckRequest.fields()}
    assert set(tools["check"].inputSchema["properties"]) - {"request"} == declared, tools["check"].inputSchema
    assert {"steps", "seed", "localize", "reach", "max_new_tokens"} <= declared
    assert not called.isError, called
    report = ast.literal_eval(called.content[0].text)  # Gradio returns the dict as its Python text
    assert report["error"] is None and report["broken"] is False, report
    assert report["checks"][0]["verdict"]["kind"] == "MATCH"
