# coding-loops: every role of the system in one image, plus git and the Claude Code
# CLI for the `claude` agent. Each compose service runs one role (`loops gate`, ...).
# Secrets (ANTHROPIC_API_KEY, tokens) come from the environment at run time; nothing
# secret is ever copied or set here.
#
#   docker build -t coding-loops .
#   docker run --rm -e REDIS_URL=redis://host:6379/0 -v "$PWD:/repo" coding-loops status

# Claude Code needs Node.js >= 22; Debian bookworm ships 18, so take node from the
# official image of the same Debian release.
FROM node:22-bookworm-slim AS node

FROM python:3.11-slim-bookworm

# The version .ci/run installs for the claude runner's tests (CLAUDE_CODE_VERSION there).
ARG CLAUDE_CODE_VERSION=2.1.329

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git for worktrees, merges and pushes; the repository is a bind mount owned by
# another uid, so git must trust it. bubblewrap sandboxes the agents (loops/sandbox.py);
# as a non-root user it needs user namespaces, which Docker's default seccomp profile
# denies: compose's `agents` service says LOOPS_SANDBOX=off (an agent host runs no
# agent unsandboxed unless told; docs/ARCHITECTURE.md, "Agent hosts").
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates openssh-client bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && npm install -g --no-fund --no-audit "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
    && npm cache clean --force \
    && { claude --version >/dev/null 2>&1 \
         || (cd /usr/local/lib/node_modules/@anthropic-ai/claude-code && node install.cjs); } \
    && claude --version

COPY . /tmp/src
RUN pip install /tmp/src && rm -rf /tmp/src && loops --help > /dev/null

# Not root: the Claude Code CLI refuses to skip permission prompts as root, and files
# written into the mounted repository should not belong to root. Compose may run as
# the host user's uid (LOOPS_UID), so HOME is writable for any uid.
RUN useradd --create-home --uid 1000 --shell /bin/bash loops && chmod 0777 /home/loops
ENV HOME=/home/loops
USER loops
WORKDIR /repo

EXPOSE 8765
ENTRYPOINT ["loops"]
CMD ["--help"]
