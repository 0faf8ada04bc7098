MAX_BATCH: int

class Receiver:
    def __init__(
        self, fd: int, pcapng: bool = True, snaplen: int = 0, keep: bool = False, hold: bool = False, /
    ) -> None: ...
    def set_sources(self, sources: dict[int, list[bytes]], /) -> None: ...
    def recv_batch(
        self, max_datagrams: int = 256, /
    ) -> tuple[
        dict[int, tuple[bytes, int, int, int, int]],
        tuple[int, int, int, int, int],
        list[tuple[int, bytes, tuple[str, int], int]],
        int,
        int,
        int,
    ]: ...
    def take_held(self) -> dict[int, tuple[bytes, int, int, int, int]]: ...
    def set_hold(self, vnis: list[int], /) -> None: ...

def split_pods(
    buf: bytes | bytearray, pcapng: bool, index: dict[bytes, int], per_pod: bool, /
) -> tuple[list[tuple[int, bool, bytes, int, int, int, int]], int, int]: ...
