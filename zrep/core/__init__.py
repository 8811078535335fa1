"""The pure protocol core: no sockets, no clock, no disk, no threads, no global random.

Must not import zmq, os, time, socket, threading or anything outside zrep.core
(except the standard library's dataclasses, enum, random types and typing).
"""
