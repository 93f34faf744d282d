import { useEffect, type RefObject } from 'react';

/**
 * A side panel opened by the user takes the focus (its first field, else the panel itself), and
 * gives it back to the button that opened it when it closes, so keyboard users are never left on
 * the page's body. Panels that are open from the start do not steal the focus.
 */
export function usePanelFocus(panel: RefObject<HTMLElement | null>, focusOnOpen: boolean, returnTo: RefObject<HTMLElement | null>): void {
  useEffect(() => {
    if (focusOnOpen) {
      const el = panel.current;
      const first = el?.querySelector<HTMLElement>('[data-autofocus]');
      (first ?? el)?.focus();
    }
    return () => {
      const back = returnTo.current;
      // Only if the focus was inside the panel (or lost with it): never yank it from elsewhere.
      const active = document.activeElement;
      if (back && back.isConnected && (!active || active === document.body || panel.current?.contains(active))) back.focus();
    };
    // Runs once per opening: the panel mounts when opened and unmounts when closed.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
}
