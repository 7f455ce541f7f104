// report.html loads NiiVue as one classic script (global `niivue`), so no module loader is needed.
export * from "@niivue/niivue";
