// The build step: writes a file the server serves, with a build-time value.
require("fs").writeFileSync("built.json", JSON.stringify({ built: true, env: process.env.TRISTAGE_ENV }));
