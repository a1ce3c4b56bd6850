#!/bin/sh
# Compile GOV.UK Frontend with the service's own font into static/ (no crown, no GDS Transport).
set -eu
cd "$(dirname "$0")/.."
mkdir -p static/css static/js static/govuk
npx sass --pkg-importer=node --style=compressed --no-source-map assets/scss/app.scss static/css/app.css
cp node_modules/govuk-frontend/dist/govuk/govuk-frontend.min.js assets/js/app.mjs static/js/
rm -rf static/govuk/assets && cp -r node_modules/govuk-frontend/dist/govuk/assets static/govuk/assets
