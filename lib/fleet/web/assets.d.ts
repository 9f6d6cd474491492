// Style sheets imported by page scripts: esbuild bundles them into dist/web/<page>.css.
declare module '*.css';
