"""`tailor ui`: start the web UI on 127.0.0.1 (an access token, printed once, for any other address)."""

from __future__ import annotations

import secrets

from tailor.errors import TailorError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def access_token(host: str, token: str | None) -> str | None:
    """The token every request must carry: none on loopback unless given, a fresh random one elsewhere."""
    if token:
        if len(token) < 16:
            raise TailorError("the access token is too short", where="--token", fix="use at least 16 characters, or leave it out to get a random one")
        return token
    return None if host in LOOPBACK else secrets.token_urlsafe(24)


def run(settings) -> None:
    """Serve the UI until interrupted (settings: tailor.config.UiCommand)."""
    try:
        import uvicorn
    except ImportError:
        raise TailorError("the web UI needs the serve extra", fix="pip install 'tailor[serve]'") from None
    from tailor.ui.app import create_app
    from tailor.ui.jobs import lock_workspace

    token = access_token(settings.host, settings.token)
    lock = lock_workspace(settings.workspace)  # noqa: F841 - held until the process ends
    app = create_app(settings.workspace, settings.root, host=settings.host, port=settings.port, token=token,
                     max_upload_mb=settings.max_upload_mb, device=settings.device or "default",
                     slots_per_device=settings.jobs_per_device, nice=settings.nice)
    import socket

    # on every address: the machine's name is what another computer opens
    shown = socket.gethostname() if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{settings.port}/"
    print(f"tailor ui: workspace {app.state.ctx.workspace.root}; files confined to {app.state.ctx.roots.describe()}")
    print(f"open {url}" + (f"?token={token}" if token else ""), flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
