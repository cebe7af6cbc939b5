// What the editor remembers in this browser (localStorage): its settings, its layout and
// whether hidden files show. Unreadable or missing values fall back to the defaults.
const PREFIX = "director:editor:";

export const SETTINGS_DEFAULTS = Object.freeze({ theme: "light", keymap: "default", fontSize: 14 });
export const LAYOUT_DEFAULTS = Object.freeze({ filesWidth: null, bottomHeight: null, filesOpen: true, bottomOpen: true });
const CHOICES = { theme: ["light", "dark"], keymap: ["default", "vim", "emacs"] };

function read(name) {
  try {
    const value = JSON.parse(localStorage.getItem(PREFIX + name) || "null");
    return value && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}

function write(name, value) {
  try {
    localStorage.setItem(PREFIX + name, JSON.stringify(value));
  } catch {
    /* storage full or turned off: the choice lasts until the page is left */
  }
}

export function loadSettings() {
  const stored = read("settings");
  const settings = { ...SETTINGS_DEFAULTS };
  for (const [key, allowed] of Object.entries(CHOICES)) if (allowed.includes(stored[key])) settings[key] = stored[key];
  const size = Number(stored.fontSize);
  if (Number.isInteger(size) && size >= 8 && size <= 40) settings.fontSize = size;
  return settings;
}

export const saveSettings = (settings) => write("settings", settings);

export function loadLayout() {
  const stored = read("layout");
  const layout = { ...LAYOUT_DEFAULTS };
  for (const key of ["filesWidth", "bottomHeight"]) {
    const value = Number(stored[key]);
    if (stored[key] !== null && Number.isFinite(value) && value > 0) layout[key] = value;
  }
  for (const key of ["filesOpen", "bottomOpen"]) if (typeof stored[key] === "boolean") layout[key] = stored[key];
  return layout;
}

export const saveLayout = (layout) => write("layout", layout);

export const loadShowHidden = () => read("view").showHidden === true;
export const saveShowHidden = (showHidden) => write("view", { showHidden });

/** Forget everything the editor keeps in this browser. */
export function resetAll() {
  for (const name of ["settings", "layout", "view"]) {
    try {
      localStorage.removeItem(PREFIX + name);
    } catch {
      /* nothing kept */
    }
  }
}
