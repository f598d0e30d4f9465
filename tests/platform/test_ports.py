"""Ports for servers that start beside Ray: below the kernel's ephemeral range (where Ray's own port-0 binds land) and
above Ray's worker ports, and free."""
import socket

from stocktrend.platform.ports import HIGH, LOW, ephemeral_range, free_port


def test_free_ports_are_outside_the_ranges_ray_takes_ports_from_and_bindable():
    low_ephemeral = ephemeral_range()[0]
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20  # never the same port twice in one process
    assert all(LOW <= p <= HIGH and p < low_ephemeral for p in ports), (sorted(ports), low_ephemeral)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
            s.listen()


def test_a_listening_port_is_skipped(monkeypatch):
    import stocktrend.platform.ports as ports
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        taken = s.getsockname()[1]
        # The candidates come in the order given: the taken port first.
        monkeypatch.setattr(ports.random, "sample", lambda population, k: [taken, *(p for p in population
                                                                                  if p != taken)][:k])
        got = ports.free_port()
        assert got != taken and LOW <= got
