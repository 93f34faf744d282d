import { useSyncExternalStore } from 'react';
import { parseRoute, type Route } from '../state/links';

const subscribe = (fn: () => void) => {
  window.addEventListener('hashchange', fn);
  return () => window.removeEventListener('hashchange', fn);
};

/** The current hash route; re-renders on navigation. */
export function useHashRoute(): Route {
  const hash = useSyncExternalStore(subscribe, () => location.hash);
  return parseRoute(hash);
}

export function navigate(fragment: string, replace = false): void {
  if (replace) history.replaceState(null, '', fragment);
  else location.hash = fragment;
  if (replace) window.dispatchEvent(new HashChangeEvent('hashchange'));
}
