// The client helper the README shows: keeps the last position per room and hands it
// back in the handshake on every (re)connect, so the bridge replays what was missed.
import { io } from "socket.io-client";

export function resumable(url, token, options = {}) {
  const positions = {}; // room -> { epoch, seq }
  const socket = io(url, { ...options, auth: (cb) => cb({ token, positions }) });
  const keep = (room, p) => { positions[room] = { epoch: p.epoch, seq: p.seq }; };
  const behind = (p, by) => positions[p.room]?.epoch === p.epoch && p.seq > positions[p.room].seq + by;
  // Missed a live event (this socket was too slow): reconnect, and the handshake replays it.
  const resync = () => { socket.disconnect(); socket.connect(); };
  socket.onAny((_event, msg) => { const p = msg?.position; if (p) behind(p, 1) ? resync() : keep(p.room, p); });
  socket.on("sync:position", (p) => { if (behind(p, 0)) resync(); });
  socket.on("session:closing", (m) => { if (m.reconnect) socket.once("disconnect", () => socket.connect()); });
  socket.on("connection:success", (hello) => Object.entries(hello.positions).forEach(([r, p]) => keep(r, p)));
  // subscribe:* / unsubscribe:* through this, so joined rooms are resumed and left ones not.
  const request = async (event) => {
    const reply = await socket.emitWithAck(event);
    Object.entries(reply.positions ?? {}).forEach(([r, p]) => keep(r, p));
    Object.keys(positions).filter((r) => !reply.rooms.includes(r)).forEach((r) => delete positions[r]);
    return reply;
  };
  return { socket, positions, request };
}
