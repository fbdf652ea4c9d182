"""The live client protocol (``protocol``) and its two transports: Socket.IO and the old plain WebSocket."""
