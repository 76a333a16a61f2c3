// Regenerates the usage blocks of docs/cli.md from `knit help <command>`, so the
// page never drifts from the flags the code accepts (test/cli/contract.test.ts checks it).
// Run after `npm run build`: node scripts/cli-doc.mjs
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { COMMAND_NAMES } from '../dist/cli/main.js';

const BEGIN = '<!-- usage:begin -->';
const END = '<!-- usage:end -->';
const blocks = COMMAND_NAMES.map((c) => {
  const help = execFileSync(process.execPath, ['bin/knit.js', 'help', c], { encoding: 'utf8' }).trimEnd();
  return `### knit ${c}\n\n\`\`\`\n${help}\n\`\`\``;
});
const page = readFileSync('docs/cli.md', 'utf8');
const start = page.indexOf(BEGIN);
const end = page.indexOf(END);
if (start < 0 || end < start) throw new Error('docs/cli.md lacks the usage markers');
writeFileSync('docs/cli.md', `${page.slice(0, start + BEGIN.length)}\n\n${blocks.join('\n\n')}\n\n${page.slice(end)}`);
console.log(`docs/cli.md: ${COMMAND_NAMES.length} commands`);
