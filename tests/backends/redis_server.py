"""A redis-server of the test's own on a free port (never the shared one), to kill, restart,
pause or slow down. Imported by the backend tests (pytest puts this folder on ``sys.path``)."""

import socket
import subprocess
import time


class Server:
    """A redis-server on a free port, without persistence; ``args`` are extra server options."""

    def __init__(self, password: str | None = None, *args: str) -> None:
        self.password = password
        self.args = list(args)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *(["--requirepass", self.password] if self.password else []),
             *self.args],
            stdout=subprocess.DEVNULL)
        client = self.client(socket_connect_timeout=0.2)
        for _ in range(100):  # bounded: about 2 s
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.AuthenticationError):
                time.sleep(0.02)
        client.close()

    def client(self, **options):
        """A synchronous redis-py client of this server (the test's own view)."""
        import redis

        return redis.Redis(port=self.port, password=self.password, **options)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
