#!/usr/bin/env python3
"""A fake `claude` CLI: prints realistic `-p --output-format stream-json --verbose` output.

Environment:
- `FAKE_CLAUDE_SCENARIO`: success (default), usage_limit, usage_banner, outage, crash,
  hang, empty, denied, resume_unknown.
- `FAKE_CLAUDE_RECORD`: a file; each run appends one JSON line with argv, stdin, cwd.
- `FAKE_CLAUDE_REPLY`: the final text of `success` (default: a promise).
- `FAKE_CLAUDE_CHILD_PID`: for `hang`, where to write the pid of the child it starts.
- `FAKE_CLAUDE_RESET`: for `usage_limit`, the reset time (unix seconds).

Standard library only, so it runs under any python3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def usage(inp: int, out: int) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 11,
    }


def assistant(session: str, msg_id: str, block: dict[str, object], **extra: object) -> None:
    emit(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-fake",
                "content": [block],
                "usage": usage(100, 20),
            },
            "parent_tool_use_id": None,
            "session_id": session,
            **extra,
        }
    )


def tool_result(session: str, tool_id: str, content: str) -> None:
    emit(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": content}],
            },
            "session_id": session,
        }
    )


def result(session: str, text: str | None, *, is_error: bool = False, **extra: object) -> None:
    event: dict[str, object] = {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "duration_ms": 1234,
        "num_turns": 2,
        "session_id": session,
        "total_cost_usd": 0.0421,
        "usage": usage(300, 60),
        "permission_denials": [],
    }
    if text is not None:
        event["result"] = text
    event.update(extra)
    emit(event)


def main() -> int:
    argv = sys.argv[1:]
    prompt = sys.stdin.read()
    record = os.environ.get("FAKE_CLAUDE_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"argv": argv, "stdin": prompt, "cwd": os.getcwd()}) + "\n")
    scenario = os.environ.get("FAKE_CLAUDE_SCENARIO", "success")
    resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
    if "--output-format" not in argv or "--verbose" not in argv or "-p" not in argv:
        print("When using --print, --output-format=stream-json requires --verbose", file=sys.stderr)
        return 1
    if scenario == "resume_unknown" and resume:
        print(f"No conversation found with session ID: {resume}", file=sys.stderr)
        return 1
    session = resume or str(uuid.uuid4())
    if scenario == "crash":
        print("TypeError: Cannot read properties of undefined (reading 'x')", file=sys.stderr)
        return 1
    emit(
        {
            "type": "system",
            "subtype": "init",
            "cwd": os.getcwd(),
            "session_id": session,
            "tools": ["Bash", "Read", "Write", "Edit"],
            "model": "claude-fake",
            "permissionMode": "acceptEdits",
            "apiKeySource": "ANTHROPIC_API_KEY",
        }
    )
    if scenario == "hang":
        child = subprocess.Popen(["sleep", "120"])
        pid_file = os.environ.get("FAKE_CLAUDE_CHILD_PID")
        if pid_file:
            with open(pid_file, "w", encoding="utf-8") as fh:
                fh.write(str(child.pid))
        time.sleep(120)
        return 0
    if scenario == "usage_limit":
        reset = int(os.environ.get("FAKE_CLAUDE_RESET", str(int(time.time()) + 3600)))
        emit(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {
                    "status": "rejected",
                    "resetsAt": reset,
                    "rateLimitType": "five_hour",
                },
                "session_id": session,
            }
        )
        text = f"Claude AI usage limit reached|{reset}"
        assistant(session, "msg_1", {"type": "text", "text": text}, error="rate_limit")
        result(session, text, is_error=True)
        return 1
    if scenario == "usage_banner":
        text = "You've hit your limit · resets 3pm (UTC)"
        assistant(session, "msg_1", {"type": "text", "text": text})
        result(session, text, is_error=True)
        return 1
    if scenario == "outage":
        text = "API Error: 529 Overloaded. This is a server-side issue, usually temporary."
        assistant(
            session,
            "msg_1",
            {"type": "text", "text": text},
            error="server_error",
            api_error_status=529,
        )
        result(session, text, is_error=True, api_error_status=529)
        return 1
    # success, empty, denied: one tool call, then the reply.
    assistant(session, "msg_1", {"type": "text", "text": "I'll write the file."})
    assistant(
        session,
        "msg_1",
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "Write",
            "input": {"file_path": os.path.join(os.getcwd(), "hello.txt"), "content": "hi\n"},
        },
    )
    with open("hello.txt", "w", encoding="utf-8") as fh:
        fh.write("hi\n")
    tool_result(session, "toolu_1", "File created successfully")
    assistant(
        session,
        "msg_2",
        {
            "type": "tool_use",
            "id": "toolu_2",
            "name": "Bash",
            "input": {"command": "env | grep ANTHROPIC", "description": "check env"},
        },
    )
    tool_result(session, "toolu_2", f"ANTHROPIC_API_KEY={os.environ.get('ANTHROPIC_API_KEY', '')}")
    if scenario == "empty":
        result(session, "")
        return 0
    reply = os.environ.get("FAKE_CLAUDE_REPLY", "Done.\n<promise>file written</promise>")
    assistant(session, "msg_3", {"type": "text", "text": reply})
    denials = (
        [{"tool_name": "Bash", "tool_use_id": "toolu_9", "tool_input": {"command": "rm -rf /"}}] * 2
        if scenario == "denied"
        else []
    )
    result(session, reply, permission_denials=denials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
