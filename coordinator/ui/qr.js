// @ts-check
/**
 * A join token as a QR code, drawn in the browser: the token never travels
 * again. The encoder is the `qrcode-generator` package (MIT, no dependencies),
 * served by the coordinator as /ui/vendor/qrcode.mjs from node_modules — not a
 * CDN. The picture is one SVG <path> built with DOM calls (no innerHTML, no
 * data: URL), so the strict CSP holds.
 */

const SVG = 'http://www.w3.org/2000/svg';
/** The quiet zone ISO/IEC 18004 asks for: 4 modules on each side. */
const QUIET_MODULES = 4;

/**
 * @param {string} text
 * @param {string} label accessible name of the picture
 * @returns {Promise<SVGSVGElement>}
 */
export async function qrSvg(text, label) {
  const { default: qrcode } = await import('./vendor/qrcode.mjs');
  const qr = qrcode(0, 'M'); // the smallest version that fits; M corrects ~15 %, plenty for a screen
  qr.addData(text, 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  let d = '';
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c + QUIET_MODULES} ${r + QUIET_MODULES}h1v1h-1z`;
  }
  const size = n + 2 * QUIET_MODULES;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${size} ${size}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.dataset.modules = String(n);
  const bg = document.createElementNS(SVG, 'rect');
  bg.setAttribute('width', String(size));
  bg.setAttribute('height', String(size));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}
