// The Node `ws` fan-out server of bench/fanout: the broadcast example of the ws README
// ("broadcast to every other client"), `wss.clients.forEach(c => c.send(m))`, with
// ws's defaults (no permessage-deflate on the server, no bufferutil). A connection to
// /pub publishes what it sends; every other connection (/sub) receives it.
//
//   node server.js PORT
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port, backlog: 1024 });

wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    wss.clients.forEach((client) => {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on('listening', () => console.log(`node ws fan-out on 127.0.0.1:${port}`));
