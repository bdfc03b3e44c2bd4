export function findChromium(): string | null;
export function isCI(): boolean;
export function missingChromiumMessage(): string;
