// Starts the test suite's single-node Apache Kafka (KRaft, jars cached by scripts/test.sh)
// with the load tool's topics, prints its bootstrap address, and keeps it up until killed:
// `node e2e/kafka-for-bench.mjs` then `realtime-load personal --brokers <address> …`.
import { startBroker } from "./harness.mjs";

const broker = await startBroker();
await broker.createTopics(["order.updated", "inventory.updated", "realtime-bridge.dlq"], 4);
console.log(broker.brokers);
const stop = async () => { await broker.stop(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setInterval(() => {}, 1 << 30);
