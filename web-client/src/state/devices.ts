/**
 * Media devices during a call: the lists the device menus show, and what to do when the set of
 * devices changes (a headset unplugged): a chosen device that is gone falls back to the system
 * default, and the user is told which. Pure: the session feeds it `enumerateDevices()` results.
 */
export type DeviceKind = 'audioinput' | 'videoinput' | 'audiooutput';

export interface DeviceEntry {
  kind: DeviceKind;
  deviceId: string;
  label: string;
}

/** The chosen device per kind; '' = the system default. */
export type DeviceChoice = Record<DeviceKind, string>;

export const DEFAULT_CHOICE: DeviceChoice = { audioinput: '', videoinput: '', audiooutput: '' };

export function listDevices(all: ReadonlyArray<{ kind: string; deviceId: string; label: string }>): DeviceEntry[] {
  return all
    .filter((d): d is DeviceEntry => (d.kind === 'audioinput' || d.kind === 'videoinput' || d.kind === 'audiooutput') && d.deviceId !== '' && d.deviceId !== 'default' && d.deviceId !== 'communications')
    .map((d) => ({ kind: d.kind, deviceId: d.deviceId, label: d.label }));
}

/** Kinds whose chosen device is no longer present: each falls back to the default. */
export function removedChoices(choice: DeviceChoice, available: readonly DeviceEntry[]): DeviceKind[] {
  return (Object.keys(choice) as DeviceKind[]).filter((kind) => choice[kind] !== '' && !available.some((d) => d.kind === kind && d.deviceId === choice[kind]));
}
