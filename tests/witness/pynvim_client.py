"""Drives otp-sidecar with pynvim's MessagePack-RPC session, a client we did not write.

Usage: pynvim_client.py unix PATH | tcp HOST PORT
Prints one JSON object: the reply to each call, or the error text the daemon sent.
"""
import json
import sys

from pynvim.msgpack_rpc import socket_session, tcp_session


def main() -> None:
    if sys.argv[1] == "unix":
        session = socket_session(sys.argv[2])
    else:
        session = tcp_session(sys.argv[2], int(sys.argv[3]))
    # pynvim expects Neovim's [code, message] errors; otp-sidecar sends a plain string.
    session.error_wrapper = lambda err: RuntimeError(err)

    def call(method, *args):
        try:
            return {"ok": session.request(method, *args)}
        except RuntimeError as e:
            return {"err": str(e)}

    out = {
        "ping": call("ping"),
        "send": call("sendOTP", "918273", "+31612345678", "ACME"),
        "bad_phone": call("sendOTP", "918273", "0612345678", "ACME"),
        "unknown": call("nope"),
    }
    session.close()
    print(json.dumps(out))


main()
