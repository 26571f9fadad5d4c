// Formats HCL on stdin to stdout, as `terraform fmt` would, using the
// formatter bundled with the cdktn CLI (@cdktn/hcl-tools, Go hclwrite as wasm).
const { format } = require("@cdktn/hcl-tools");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  try {
    process.stdout.write(await format(input));
  } catch (err) {
    process.stderr.write(String(err) + "\n");
    process.exit(1);
  }
});
