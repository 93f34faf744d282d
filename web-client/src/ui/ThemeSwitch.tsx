import { useEffect, useState } from 'react';
import { useServices, useT } from './services';
import { readTheme, themeAttribute, writeTheme, type ThemeChoice } from '../state/theme';

/** Follow the system, or force light or dark; applied to <html data-theme> and remembered. */
export function ThemeSwitch() {
  const services = useServices();
  const t = useT();
  const [choice, setChoice] = useState<ThemeChoice>(() => readTheme(services.kv));
  useEffect(() => {
    const attr = themeAttribute(choice);
    if (attr) document.documentElement.dataset.theme = attr;
    else delete document.documentElement.dataset.theme;
  }, [choice]);
  return (
    <label className="theme-switch">
      <span>{t('theme.label')}</span>{' '}
      <select
        value={choice}
        data-testid="theme"
        onChange={(e) => {
          const v = e.target.value as ThemeChoice;
          setChoice(v);
          writeTheme(services.kv, v);
        }}
      >
        <option value="system">{t('theme.system')}</option>
        <option value="light">{t('theme.light')}</option>
        <option value="dark">{t('theme.dark')}</option>
      </select>
    </label>
  );
}
