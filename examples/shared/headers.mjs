// Response headers both apps send with every answer.
export const securityHeaders = {
  // Only our own stylesheet and forms to ourselves: an injected <script> or a form pointing elsewhere does nothing.
  'Content-Security-Policy':
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  // For browsers older than CSP's frame-ancestors: no framing, so no clickjacking of the sign-out buttons.
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'same-origin',
  'Cross-Origin-Opener-Policy': 'same-origin',
  // Pages show who is signed in: never from a cache, and not from the back button after signing out.
  'Cache-Control': 'no-store',
};
