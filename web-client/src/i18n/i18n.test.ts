import { describe, expect, it } from 'vitest';
import { catalogs, de, en } from './catalog';
import { pickLanguage, translator } from './i18n';

describe('message catalog', () => {
  it('picks the first preferred language it has, by primary tag, else English', () => {
    expect(pickLanguage(['de-AT', 'en'])).toBe('de');
    expect(pickLanguage(['fr-FR', 'DE'])).toBe('de');
    expect(pickLanguage(['fr-FR', 'es'])).toBe('en');
    expect(pickLanguage([])).toBe('en');
    expect(pickLanguage(['en-GB', 'de'])).toBe('en');
  });
  it('fills in parameters and leaves unknown ones visible', () => {
    const t = translator('en');
    expect(t('member.joined', { name: 'Bob' })).toBe('Bob joined');
    expect(t('banner.reconnecting', { secs: 3, why: 'closed' })).toBe('Reconnecting in 3s: closed. Calls continue peer to peer.');
    expect(t('member.joined')).toBe('{name} joined');
    expect(translator('de')('member.joined', { name: 'Bob' })).toBe('Bob ist beigetreten');
  });
  it('has every key in every language, each translated with the same parameters', () => {
    for (const [lang, table] of Object.entries(catalogs)) {
      expect(Object.keys(table).sort(), lang).toEqual(Object.keys(en).sort());
      for (const key of Object.keys(en) as Array<keyof typeof en>) {
        const params = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
        expect(params(table[key]), `${lang} ${key}`).toEqual(params(en[key]));
        expect(table[key].trim(), `${lang} ${key}`).not.toBe('');
      }
    }
    // German is a translation, not a copy: most sentences differ.
    const same = (Object.keys(en) as Array<keyof typeof en>).filter((k) => de[k] === en[k]);
    expect(same.length).toBeLessThan(Object.keys(en).length / 10);
  });
});
