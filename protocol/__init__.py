"""udproom.protocol: everything below the screen (wire format, sans-IO cores, transport, commands).

Never imports textual or udproom.tui.
"""
