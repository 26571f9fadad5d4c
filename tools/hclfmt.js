// Formats HCL documents as `terraform fmt` would, using the formatter bundled
// with the cdktn CLI (@cdktn/hcl-tools, Go hclwrite as wasm). One process for
// every stack: starting Node and the wasm module costs ~0.3 s a time.
// stdin: a JSON array of HCL strings; stdout: a JSON array, formatted, same order.
const { format } = require("@cdktn/hcl-tools");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  try {
    const formatted = [];
    for (const doc of JSON.parse(input)) {
      formatted.push(await format(doc));
    }
    process.stdout.write(JSON.stringify(formatted));
  } catch (err) {
    process.stderr.write(String(err) + "\n");
    process.exit(1);
  }
});
