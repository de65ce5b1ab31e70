\getenv jwt_secret JWT_SECRET
\getenv jwt_exp JWT_EXP

ALTER DATABASE postgres SET "app.settings.jwt_secret" TO :'jwt_secret';
ALTER DATABASE postgres SET "app.settings.jwt_exp" TO :'jwt_exp';
