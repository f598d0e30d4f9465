"""An endpoint that cannot bind a port is one line naming the port that was taken (HAProxy's and uvicorn's bind errors,
as Ray passes them on), with what to do; anything else is not mapped. The end-to-end case (a port taken while
`stocktrend serve` starts) is in tests/test_console.py."""
from stocktrend.serve.ingress import start_error

HAPROXY = ("ray::HAProxyManager.ready() ...\nRuntimeError: HAProxy crashed during startup: [NOTICE] (1) : haproxy "
           "version is 2.8.25\n[ALERT]    (1) : Binding [/tmp/haproxy-serve/x/haproxy.cfg:50] for frontend "
           "http_frontend: cannot bind socket (Address already in use) for [{addr}]\n[ALERT] (1) : Some protocols "
           "failed to start their listeners! Exiting.")
UVICORN = "[Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): address already in use"


def test_the_endpoint_port_is_named_with_the_advice():
    why = start_error(RuntimeError(HAPROXY.format(addr="127.0.0.1:24568")), "127.0.0.1", 24568)
    assert why.startswith("port 24568 on 127.0.0.1 was taken by another process while the endpoint was starting")
    assert "--port" in why and "\n" not in why
    why = start_error(OSError(UVICORN.format(port=8000)), "127.0.0.1", 8000, hint="serve it with X")
    assert why.startswith("port 8000 on 127.0.0.1 was taken") and why.endswith("serve it with X")


def test_a_taken_haproxy_side_port_is_named_not_the_endpoints(monkeypatch):
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_PORT", raising=False)
    why = start_error(RuntimeError(HAPROXY.format(addr="0.0.0.0:9101")), "127.0.0.1", 8000)
    assert why.startswith("port 9101 (HAProxy's metrics port, RAY_SERVE_HAPROXY_METRICS_PORT) was taken"), why
    assert "8000" not in why


def test_other_failures_are_not_mapped():
    assert start_error(RuntimeError("replica failed to load the model"), "127.0.0.1", 8000) is None


def test_serving_beyond_loopback_says_what_is_reachable_and_whether_a_token_guards_it(monkeypatch):
    from stocktrend.serve.ingress import exposure_line
    monkeypatch.delenv("STOCKTREND_API_TOKEN", raising=False)
    assert exposure_line("127.0.0.1", 8000) is None and exposure_line("localhost", 8000) is None
    assert exposure_line("::1", 8000) is None
    line = exposure_line("0.0.0.0", 8000)
    assert "every interface" in line and "NOT set" in line and "port 8000" in line
    monkeypatch.setenv("STOCKTREND_API_TOKEN", "s3cret")
    line = exposure_line("10.1.2.3", 9000)
    assert "listens on 10.1.2.3" in line and "the token is set" in line and "s3cret" not in line
