"""RDP server certificates: the one a server shows (handshake) and the one EC2 attests."""
