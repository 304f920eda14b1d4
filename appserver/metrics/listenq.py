"""The current length of a listening socket's accept queue, where Linux tells it.

* TCP: ``getsockopt(TCP_INFO)``; for a socket in the LISTEN state ``tcpi_unacked`` is the
  number of connections waiting to be accepted (and ``tcpi_sacked`` the backlog), as ``ss -lt``
  shows in Recv-Q.
* unix: the same number comes from the kernel's sock_diag netlink interface
  (``UNIX_DIAG_RQLEN``, what ``ss -lx`` prints), asked for this socket's inode.

None where neither works (another OS, a kernel without unix_diag): the metric is then left out.
"""

from __future__ import annotations

import os
import socket
import struct

_TCP_INFO_UNACKED = 24          # offset of tcpi_unacked in struct tcp_info (8 one-byte fields,
                                # then rto, ato, snd_mss, rcv_mss as u32)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x01
_NLMSG_ERROR = 2
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_TCP_LISTEN = 10
_NO_COOKIE = 0xFFFFFFFF


def queue_length(sock: socket.socket) -> int | None:
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return int(struct.unpack_from("I", info, _TCP_INFO_UNACKED)[0])
        if sock.family == socket.AF_UNIX:
            return _unix_queue(os.fstat(sock.fileno()).st_ino)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _unix_queue(inode: int) -> int | None:
    """Ask sock_diag for one unix socket by inode (struct unix_diag_req, linux/unix_diag.h)."""
    request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, inode,
                          _UDIAG_SHOW_RQLEN, _NO_COOKIE, _NO_COOKIE)
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(header + request, (0, 0))
        data = nl.recv(8192)
    length, kind = struct.unpack_from("=IH", data, 0)
    if kind == _NLMSG_ERROR or length > len(data):
        return None
    # struct unix_diag_msg (16 bytes) after the 16-byte header, then rtattrs.
    offset = 16 + 16
    while offset + 4 <= length:
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_len < 4:
            break
        if attr_type == _UNIX_DIAG_RQLEN:
            return int(struct.unpack_from("=I", data, offset + 4)[0])
        offset += (attr_len + 3) & ~3
    return None
