// "Chrome 126 on Windows" from a User-Agent header, for the list of places a user is signed in. A small
// ordered table rather than a parser package: the list only has to help a person recognise their devices,
// and browsers that imitate others (Edge, Opera, Samsung Internet all say "Chrome") are checked first.
const browsers = [
  ['Edge', /\bEdg(?:e|A|iOS)?\/(\d+)/],
  ['Opera', /\b(?:OPR|Opera)\/(\d+)/],
  ['Samsung Internet', /\bSamsungBrowser\/(\d+)/],
  ['Firefox', /\b(?:Firefox|FxiOS)\/(\d+)/],
  ['Chrome (headless)', /\bHeadlessChrome\/(\d+)/],
  ['Chrome', /\b(?:Chrome|CriOS)\/(\d+)/],
  ['Safari', /\bVersion\/(\d+)[\d.]* (?:Mobile\/\S+ )?Safari\//],
  ['curl', /^curl\/(\d+)/],
];

const systems = [
  ['Windows', /\bWindows\b/],
  ['Android', /\bAndroid\b/],
  ['iOS', /\b(?:iPhone|iPad|iPod)\b/],
  ['ChromeOS', /\bCrOS\b/],
  ['macOS', /\bMac OS X\b|\bMacintosh\b/],
  ['Linux', /\bLinux\b/],
];

/** `{ browser, os }` for a User-Agent header; "Unknown browser" / "unknown system" when nothing matches. */
export function describeDevice(userAgent) {
  const text = typeof userAgent === 'string' ? userAgent : '';
  let browser = 'Unknown browser';
  for (const [name, pattern] of browsers) {
    const match = pattern.exec(text);
    if (match) {
      browser = `${name} ${match[1]}`;
      break;
    }
  }
  const os = systems.find(([, pattern]) => pattern.test(text))?.[0] ?? 'unknown system';
  return { browser, os };
}
