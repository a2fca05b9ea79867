// The client helper the README shows: keeps the last position per room and hands it
// back in the handshake on every (re)connect, so the bridge replays what was missed.
import { io } from "socket.io-client";

export function resumable(url, token, options = {}) {
  const positions = {}; // room -> { epoch, seq }
  const socket = io(url, { ...options, auth: (cb) => cb({ token, positions }) });
  const keep = (room, p) => { positions[room] = { epoch: p.epoch, seq: p.seq }; };
  // How far `p` is past what this client has seen of its room (in a new epoch: from its start).
  const ahead = (p) => { const k = positions[p.room]; return !k ? 0 : k.epoch === p.epoch ? p.seq - k.seq : p.seq; };
  // Missed a live event (too slow, or lost while Redis came back): reconnect, the handshake replays it.
  const resync = (p) => {
    if (positions[p.room].epoch !== p.epoch) keep(p.room, { epoch: p.epoch, seq: 0 });
    socket.disconnect(); socket.connect();
  };
  socket.onAny((_event, msg) => {
    const p = msg?.position;
    if (p) ahead(p) > 1 ? resync(p) : (ahead(p) === 1 || !positions[p.room]) && keep(p.room, p);
  });
  socket.on("sync:position", (p) => { if (ahead(p) > 0) resync(p); });
  socket.on("session:closing", (m) => { if (m.reconnect) socket.once("disconnect", () => socket.connect()); });
  socket.on("connection:success", (hello) => Object.entries(hello.positions).forEach(([r, p]) => keep(r, p)));
  // subscribe:* / unsubscribe:* through this, so joined rooms are resumed and left ones not.
  const request = async (event, ...args) => {
    const reply = await socket.emitWithAck(event, ...args);
    Object.entries(reply.positions ?? {}).forEach(([r, p]) => keep(r, p));
    Object.keys(positions).filter((r) => !reply.rooms.includes(r)).forEach((r) => delete positions[r]);
    return reply;
  };
  return { socket, positions, request };
}
