import { describe, expect, it } from 'vitest';
import { DEFAULT_CHOICE, listDevices, removedChoices } from './devices';

const raw = [
  { kind: 'audioinput', deviceId: 'default', label: 'Default' },
  { kind: 'audioinput', deviceId: 'mic-usb', label: 'USB headset' },
  { kind: 'videoinput', deviceId: 'cam-1', label: 'Camera' },
  { kind: 'audiooutput', deviceId: 'spk-usb', label: 'USB headset' },
  { kind: 'audioinput', deviceId: '', label: '' }, // before permission: no ids
];

describe('devices', () => {
  it('lists real devices without the aliases', () => {
    expect(listDevices(raw).map((d) => d.deviceId)).toEqual(['mic-usb', 'cam-1', 'spk-usb']);
  });
  it('falls back only for a chosen device that went away', () => {
    const available = listDevices(raw);
    expect(removedChoices(DEFAULT_CHOICE, [])).toEqual([]);
    expect(removedChoices({ audioinput: 'mic-usb', videoinput: 'cam-1', audiooutput: 'spk-usb' }, available)).toEqual([]);
    const unplugged = available.filter((d) => d.deviceId !== 'mic-usb' && d.deviceId !== 'spk-usb');
    expect(removedChoices({ audioinput: 'mic-usb', videoinput: 'cam-1', audiooutput: 'spk-usb' }, unplugged)).toEqual(['audioinput', 'audiooutput']);
  });
});
