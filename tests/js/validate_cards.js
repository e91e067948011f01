// Reads [{name, card}, ...] as JSON on stdin and prints {name: [problems]} as JSON on stdout.
// Problems are what Microsoft's Adaptive Cards library reports while parsing (unknown elements,
// bad values) and validating (duplicate ids, empty choice sets, missing required properties).
const AC = require("adaptivecards/dist/adaptivecards.js");

function problems(json) {
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  card.parse(json, context);
  const found = [];
  for (let i = 0; i < context.eventCount; i++) {
    found.push(`parse: ${context.getEventAt(i).message}`);
  }
  for (const event of card.validateProperties().validationEvents) {
    found.push(`validate: ${event.message}`);
  }
  return found;
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const report = {};
  for (const { name, card } of JSON.parse(input)) {
    report[name] = problems(card);
  }
  process.stdout.write(JSON.stringify(report));
});
