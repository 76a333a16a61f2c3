/**
 * UPnP Internet Gateway Device, the client side Knit needs, as pure text
 * codecs: the SSDP M-SEARCH and its answer (UPnP Device Architecture 1.1
 * §1.3), the device description (find the WAN connection service's control
 * URL), and SOAP AddPortMapping / GetExternalIPAddress / DeletePortMapping on
 * WANIPConnection:2, WANIPConnection:1 or WANPPPConnection:1. No sockets and
 * no HTTP here: the shell sends and fetches, these build and check.
 *
 *   M-SEARCH * HTTP/1.1                     HTTP/1.1 200 OK
 *   HOST: 239.255.255.250:1900         →    ST: urn:…:InternetGatewayDevice:1
 *   MAN: "ssdp:discover"                    LOCATION: http://10.0.0.1:5000/rootDesc.xml
 *   MX: 1                                   USN: uuid:…
 *   ST: urn:…:InternetGatewayDevice:1
 *
 * Everything parsed here comes from the LAN and is untrusted: sizes are
 * bounded, a description may only point at its own host, and anything
 * unexpected yields undefined (or a failure value), never an exception.
 */

export const SSDP_MULTICAST_ADDRESS = '239.255.255.250';
export const SSDP_PORT = 1900;
/** The device types searched for: IGD:2 devices also answer IGD:1 searches, older ones only those. */
export const SSDP_SEARCH_TARGETS = [
  'urn:schemas-upnp-org:device:InternetGatewayDevice:1',
  'urn:schemas-upnp-org:device:InternetGatewayDevice:2',
] as const;
/** An SSDP answer is a few hundred bytes; anything much longer is not one. */
export const SSDP_MAX_LEN = 2048;
/** Device descriptions are a few kB; miniupnpd's is 4 kB. */
export const UPNP_MAX_DESCRIPTION_BYTES = 64 * 1024;
export const UPNP_MAX_SOAP_BYTES = 16 * 1024;

/** The services that can map a port, best first (WANIPConnection:2 is the IGD:2 one). */
export const UPNP_WAN_SERVICES = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
] as const;

/** UPnP error codes the mapper acts on (WANIPConnection:2 §2.4). */
export const UPNP_ERROR = {
  ACTION_NOT_AUTHORIZED: 606,
  NO_SUCH_ENTRY: 714,
  CONFLICT_IN_MAPPING_ENTRY: 718,
  ONLY_PERMANENT_LEASES_SUPPORTED: 725,
} as const;

/** One M-SEARCH datagram. MX 1: the gateway is on our LAN and answers at once. */
export function encodeSsdpSearch(searchTarget: string, mxS = 1): Uint8Array {
  if (!/^[\x21-\x7e]+$/.test(searchTarget)) throw new RangeError('search target must be printable ASCII without spaces');
  if (!Number.isInteger(mxS) || mxS < 1 || mxS > 5) throw new RangeError('MX must be 1..5 seconds');
  return new TextEncoder().encode(
    `M-SEARCH * HTTP/1.1\r\nHOST: ${SSDP_MULTICAST_ADDRESS}:${SSDP_PORT}\r\nMAN: "ssdp:discover"\r\nMX: ${mxS}\r\nST: ${searchTarget}\r\n\r\n`,
  );
}

export interface SsdpAnswer { location: URL; st?: string; usn?: string }

/**
 * An answer to our M-SEARCH: "HTTP/1.1 200 OK" and an http LOCATION. `from`
 * is the answer's source address; the LOCATION must name that same host
 * (so a LAN host can't point us at some other machine), else undefined.
 */
export function parseSsdpResponse(b: Uint8Array, from: string): SsdpAnswer | undefined {
  if (b.length > SSDP_MAX_LEN) return undefined;
  const text = new TextDecoder('utf-8', { fatal: false }).decode(b);
  const lines = text.split('\r\n');
  if (!/^HTTP\/1\.[01] 200\b/.test(lines[0] ?? '')) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  const location = parseHttpUrl(headers.get('location'));
  if (!location || hostOf(location) !== from) return undefined;
  return { location, st: headers.get('st'), usn: headers.get('usn') };
}

function parseHttpUrl(text: string | undefined): URL | undefined {
  if (!text) return undefined;
  try {
    const u = new URL(text);
    return u.protocol === 'http:' ? u : undefined;
  } catch {
    return undefined;
  }
}

function hostOf(u: URL): string {
  return u.hostname.replace(/^\[|\]$/g, '');
}

export interface UpnpService { serviceType: (typeof UPNP_WAN_SERVICES)[number]; controlUrl: URL }

/** The text of the first <tag>…</tag> inside `xml` (tags may carry a namespace prefix), trimmed. */
function element(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<(?:[A-Za-z_][\\w.-]*:)?${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</(?:[A-Za-z_][\\w.-]*:)?${tag}\\s*>`).exec(xml);
  return m ? m[1]!.trim() : undefined;
}

function allElements(xml: string, tag: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}\\s*>`, 'g');
  for (let m = re.exec(xml); m; m = re.exec(xml)) out.push(m[1]!);
  return out;
}

/**
 * Finds the best WAN connection service in a device description and its
 * absolute control URL (resolved against URLBase when present, else the
 * description's own URL). The control URL must be http on the description's
 * host; otherwise (or with no such service) undefined.
 */
export function parseDeviceDescription(xml: string, location: URL): UpnpService | undefined {
  if (xml.length > UPNP_MAX_DESCRIPTION_BYTES) return undefined;
  const base = parseHttpUrl(element(xml, 'URLBase')) ?? location;
  const services = allElements(xml, 'service');
  for (const wanted of UPNP_WAN_SERVICES) {
    for (const s of services) {
      if (element(s, 'serviceType') !== wanted) continue;
      const ctl = element(s, 'controlURL');
      if (!ctl) continue;
      let url: URL;
      try {
        url = new URL(unescapeXml(ctl), base);
      } catch {
        continue;
      }
      if (url.protocol !== 'http:' || hostOf(url) !== hostOf(location)) continue;
      return { serviceType: wanted, controlUrl: url };
    }
  }
  return undefined;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function unescapeXml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
}

export interface SoapRequest { headers: Record<string, string>; body: string }

/** A SOAP 1.1 action call (UPnP DA 1.1 §3.2.1): the envelope and the SOAPACTION header. */
export function encodeSoapRequest(serviceType: string, action: string, args: readonly (readonly [string, string | number])[]): SoapRequest {
  if (!/^[A-Za-z]+$/.test(action)) throw new RangeError('a SOAP action is a name');
  const params = args.map(([k, v]) => `<${k}>${escapeXml(String(v))}</${k}>`).join('');
  const body = '<?xml version="1.0"?>\r\n' +
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">' +
    `<s:Body><u:${action} xmlns:u="${escapeXml(serviceType)}">${params}</u:${action}></s:Body></s:Envelope>\r\n`;
  return {
    headers: { 'Content-Type': 'text/xml; charset="utf-8"', SOAPAction: `"${serviceType}#${action}"` },
    body,
  };
}

export type SoapResult =
  | { ok: true; values: Record<string, string> }
  | { ok: false; errorCode?: number; description?: string };

/**
 * A SOAP answer: 200 with <u:ActionResponse> (its child elements as values),
 * or a fault (500 with UPnPError errorCode / errorDescription).
 */
export function parseSoapResponse(status: number, body: string, action: string): SoapResult {
  if (body.length > UPNP_MAX_SOAP_BYTES) return { ok: false, description: 'answer too large' };
  if (status === 200) {
    // An action with no out-arguments may answer with an empty, self-closing element (miniupnpd does).
    const empty = new RegExp(`<(?:[A-Za-z_][\\w.-]*:)?${action}Response(?:\\s[^>]*)?/>`).test(body);
    const inner = empty ? '' : element(body, `${action}Response`);
    if (inner === undefined) return { ok: false, description: `no ${action}Response in the answer` };
    const values: Record<string, string> = {};
    const re = /<([A-Za-z][\w]*)(?:\s[^>]*)?>([^<]*)<\/\1\s*>/g;
    for (let m = re.exec(inner); m; m = re.exec(inner)) values[m[1]!] = unescapeXml(m[2]!.trim());
    return { ok: true, values };
  }
  const code = Number(element(body, 'errorCode'));
  return {
    ok: false,
    ...(Number.isInteger(code) && code > 0 ? { errorCode: code } : {}),
    description: element(body, 'errorDescription') ?? `HTTP ${status}`,
  };
}

/** AddPortMapping for UDP to `internalClient:internalPort` (WANIPConnection:1 §2.4.16). 0 lease = permanent. */
export function addPortMappingRequest(serviceType: string, m: { externalPort: number; internalPort: number; internalClient: string; leaseS: number; description: string }): SoapRequest {
  return encodeSoapRequest(serviceType, 'AddPortMapping', [
    ['NewRemoteHost', ''], ['NewExternalPort', m.externalPort], ['NewProtocol', 'UDP'], ['NewInternalPort', m.internalPort],
    ['NewInternalClient', m.internalClient], ['NewEnabled', 1], ['NewPortMappingDescription', m.description], ['NewLeaseDuration', m.leaseS],
  ]);
}

export function deletePortMappingRequest(serviceType: string, externalPort: number): SoapRequest {
  return encodeSoapRequest(serviceType, 'DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', externalPort], ['NewProtocol', 'UDP']]);
}

export function getExternalIpRequest(serviceType: string): SoapRequest {
  return encodeSoapRequest(serviceType, 'GetExternalIPAddress', []);
}
