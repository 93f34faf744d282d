/**
 * Choosing a language and filling in a message: `{name}` placeholders are replaced by parameters.
 * The catalogs themselves are in `catalog.ts`; a community adds a language by adding one object
 * there (TypeScript then insists on every key).
 */
import { catalogs, type Lang, type MessageKey } from './catalog';

export type { Lang, MessageKey };
export type Params = Record<string, string | number>;
export type Translate = (key: MessageKey, params?: Params) => string;

/** The first of the browser's preferred languages that we have, by primary tag ("de-AT" → de); else English. */
export function pickLanguage(preferred: readonly string[]): Lang {
  for (const tag of preferred) {
    const primary = tag.toLowerCase().split('-')[0] ?? '';
    if (primary in catalogs) return primary as Lang;
  }
  return 'en';
}

export function translator(lang: Lang): Translate {
  const table = catalogs[lang];
  return (key, params) => {
    const text: string = table[key] ?? catalogs.en[key];
    return params ? text.replace(/\{(\w+)\}/g, (m, p: string) => (p in params ? String(params[p]) : m)) : text;
  };
}

/** English, for the view model's unit tests and as the fallback. */
export const english: Translate = translator('en');
