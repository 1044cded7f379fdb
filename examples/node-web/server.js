const http = require("http");

const port = Number(process.env.PORT || 3000);
const greeting = process.env.GREETING || "Hello";

const server = http.createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  res.writeHead(200, { "Content-Type": "text/plain" });
  res.end(`${greeting} from Node on ShellWeGo!\n`);
});

server.listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
