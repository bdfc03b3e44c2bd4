/** Reads and writes a dotted path (`'passport.user'`) in a session object. */
export function getPath(target: Record<string, any>, path: readonly string[]): unknown {
  let value: any = target;
  for (const key of path) value = value == null ? undefined : value[key];
  return value;
}

export function setPath(target: Record<string, any>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (node[key] === null || typeof node[key] !== 'object') node[key] = {};
    node = node[key];
  }
  node[path[path.length - 1]!] = value;
}
