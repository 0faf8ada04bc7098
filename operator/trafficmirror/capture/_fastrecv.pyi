def recv_batch(
    fd: int, max_datagrams: int, pcapng: bool, snaplen: int, keep: bool, /
) -> tuple[
    dict[int, tuple[bytes, int, int, int, int]],
    tuple[int, int, int, int],
    list[tuple[int, bytes, tuple[str, int], str]],
    int,
    int,
]: ...
