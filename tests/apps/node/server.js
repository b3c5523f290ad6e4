// A tiny Node web app for deploy tests: /health and / (naming the deployment).
const http = require("http");
const built = JSON.parse(require("fs").readFileSync("built.json", "utf8"));
http
  .createServer((req, res) => {
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({ deployment: process.env.TRISTAGE_DEPLOYMENT, node: true, built }));
  })
  .listen(Number(process.env.PORT), "127.0.0.1");
