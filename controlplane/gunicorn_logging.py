"""gunicorn's own log lines (start-up, worker restarts, the access log) in the format every other
Switchboard process uses: with SWITCHBOARD_LOG_FORMAT=json `switchboard web` runs gunicorn with
`--logger-class` naming `JsonLogger`, so the stream stays one JSON object a line, and each access
line carries the request id the answer was sent with."""
from __future__ import annotations

from gunicorn import glogging

from relay.logs import REQUEST_ID, JsonFormatter, RequestIdFilter


class JsonLogger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())
                handler.addFilter(RequestIdFilter())

    def access(self, resp, req, environ, request_time):
        request_id = next((value for name, value in getattr(resp, "headers", ()) if name.lower() == "x-request-id"), None)
        token = REQUEST_ID.set(request_id)
        try:
            super().access(resp, req, environ, request_time)
        finally:
            REQUEST_ID.reset(token)
