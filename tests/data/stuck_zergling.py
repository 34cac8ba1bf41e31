"""A zergling that attaches (HELLO, WELCOME, per docs/PROTOCOL.md) with a large
capacity and then never reads its socket again: the stuck zergling of the
hardening tests, written against the documented protocol rather than the library."""
import os
import socket
import struct
import time


def field(tag, value):
    return struct.pack("<BI", tag, len(value)) + value


sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect(os.environ["ZERGPOOL_SOCKET"])
hello = bytes([1]) + field(1, struct.pack("<H", 4)) + field(2, struct.pack("<I", os.getpid())) + field(3, struct.pack("<I", 100000))
sock.send(hello)
sock.recv(65536)  # WELCOME
while True:
    time.sleep(3600)
