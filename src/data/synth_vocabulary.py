"""Word lists behind the synthetic catalogue: class, family and filler vocabularies.

Each product type has its own words; related types share a family vocabulary, and some words
of a sibling type leak in, so that a text model learns the task but confuses neighbours as it
does on the real catalogue. Images carry the family in their colour and the type in their pattern,
so the two modalities complement each other.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class ClassWords(NamedTuple):
    """The words that make a product of one type recognisable, in French, English and German."""

    family: str
    fr: tuple[str, ...]
    en: tuple[str, ...]
    de: tuple[str, ...]


FAMILY_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "livres": ("livre", "édition", "auteur", "pages", "tome", "broché", "lecture", "collection"),
    "jeux_video": (
        "jeu",
        "console",
        "manette",
        "joueur",
        "nintendo",
        "playstation",
        "xbox",
        "sega",
    ),
    "jouets": ("jouet", "enfant", "jeu", "figurine", "collection", "ans", "garçon", "fille"),
    "bebe": ("bébé", "naissance", "mois", "enfant", "doux", "coton", "maternité"),
    "maison": ("maison", "intérieur", "salon", "chambre", "cuisine", "décor", "design", "pièce"),
    "jardin": ("jardin", "extérieur", "terrasse", "résistant", "piscine", "été", "outdoor"),
    "bureau": ("bureau", "école", "papier", "format", "a4", "couleur", "cahier"),
}

# fmt: off
CLASS_WORDS: Final[dict[int, ClassWords]] = {
    10: ClassWords(
        "livres",
        (
            "occasion", "roman", "ancien", "poche", "exemplaire", "usagé", "éditions",
            "gallimard", "folio", "histoire", "souvenirs", "lettres", "préface", "réédition"
        ),
        ("used", "book", "paperback", "novel", "vintage"),
        ("buch", "gebraucht", "roman", "taschenbuch"),
    ),
    40: ClassWords(
        "jeux_video",
        (
            "import", "cd", "jeu", "pal", "version", "japonais", "cartouche", "dvd", "boîte",
            "notice", "ps2", "gamecube", "megadrive", "snes"
        ),
        ("game", "import", "edition", "region", "disc"),
        ("spiel", "spielen", "version", "import"),
    ),
    50: ClassWords(
        "jeux_video",
        (
            "chargeur", "câble", "housse", "protection", "support", "adaptateur", "batterie",
            "station", "volant", "stylet", "coque", "usb", "accessoire", "kit"
        ),
        ("charger", "cable", "case", "adapter", "controller"),
        ("ladegerät", "kabel", "hülle", "adapter"),
    ),
    60: ClassWords(
        "jeux_video",
        (
            "console", "portable", "rétro", "pack", "go", "edition", "limitée", "noire",
            "blanche", "mini", "classic", "intégrée", "émulateur", "hdmi"
        ),
        ("console", "handheld", "retro", "bundle", "system"),
        ("konsole", "tragbar", "retro", "paket"),
    ),
    1140: ClassWords(
        "jouets",
        (
            "figurine", "pop", "funko", "statuette", "vinyl", "manga", "anime", "marvel",
            "résine", "socle", "collector", "dragon", "ball", "one"
        ),
        ("figure", "statue", "collectible", "vinyl", "anime"),
        ("figur", "sammelfigur", "statue", "anime"),
    ),
    1160: ClassWords(
        "jouets",
        (
            "carte", "cartes", "pokemon", "yu-gi-oh", "magic", "booster", "rare", "holo",
            "deck", "mtg", "vf", "brillante", "tcg", "foil"
        ),
        ("card", "cards", "booster", "rare", "holo"),
        ("karte", "karten", "sammelkarte", "selten"),
    ),
    1180: ClassWords(
        "jouets",
        (
            "warhammer", "figurines", "peindre", "plomb", "wargame", "games", "workshop",
            "armée", "escouade", "space", "marine", "donjons", "dragons", "miniature"
        ),
        ("miniature", "wargame", "squad", "army", "paint"),
        ("miniatur", "tabletop", "armee", "bemalen"),
    ),
    1280: ClassWords(
        "jouets",
        (
            "peluche", "poupée", "doudou", "éveil", "bois", "puzzle", "musical", "bébé",
            "playmobil", "lego", "voiture", "construction", "balle", "cadeau"
        ),
        ("plush", "doll", "toy", "puzzle", "gift"),
        ("plüsch", "puppe", "spielzeug", "geschenk"),
    ),
    1281: ClassWords(
        "jouets",
        (
            "société", "plateau", "joueurs", "partie", "dés", "stratégie", "ambiance",
            "famille", "règles", "pions", "cartes", "coopératif", "asmodee", "extension"
        ),
        ("board", "players", "dice", "strategy", "family"),
        ("brettspiel", "spieler", "würfel", "familie"),
    ),
    1300: ClassWords(
        "jouets",
        (
            "drone", "rc", "télécommandé", "maquette", "échelle", "moteur", "hélice",
            "quadricoptère", "radiocommande", "modélisme", "voiture", "batterie", "caméra",
            "1/10"
        ),
        ("drone", "remote", "scale", "model", "motor"),
        ("drohne", "ferngesteuert", "modell", "maßstab"),
    ),
    1301: ClassWords(
        "bebe",
        (
            "chaussettes", "body", "pyjama", "grenouillère", "bonnet", "chaussons", "lot",
            "paires", "taille", "layette", "garçon", "fille", "bavoir", "gigoteuse"
        ),
        ("socks", "bodysuit", "pajamas", "baby", "clothes"),
        ("socken", "strampler", "baby", "kleidung"),
    ),
    1302: ClassWords(
        "jouets",
        (
            "trampoline", "toboggan", "balançoire", "piscine", "gonflable", "pistolet", "eau",
            "ballon", "trottinette", "vélo", "cerf-volant", "plein", "air", "sable"
        ),
        ("outdoor", "trampoline", "slide", "swing", "kite"),
        ("trampolin", "rutsche", "schaukel", "draußen"),
    ),
    1320: ClassWords(
        "bebe",
        (
            "poussette", "biberon", "siège", "auto", "tétine", "sac", "langer", "chauffe",
            "babyphone", "écoute", "matelas", "porte-bébé", "sécurité", "landau"
        ),
        ("stroller", "bottle", "car", "seat", "carrier"),
        ("kinderwagen", "flasche", "autositz", "trage"),
    ),
    1560: ClassWords(
        "maison",
        (
            "meuble", "table", "chaise", "armoire", "commode", "étagère", "canapé", "lit",
            "tiroirs", "bois", "massif", "chêne", "buffet", "tabouret"
        ),
        ("furniture", "table", "chair", "shelf", "drawer"),
        ("möbel", "tisch", "stuhl", "regal"),
    ),
    1920: ClassWords(
        "maison",
        (
            "housse", "couette", "oreiller", "taie", "drap", "coussin", "rideau", "plaid",
            "linge", "coton", "parure", "nappe", "serviette", "polyester"
        ),
        ("pillow", "cushion", "cover", "curtain", "blanket"),
        ("kissen", "bettwäsche", "vorhang", "decke"),
    ),
    1940: ClassWords(
        "maison",
        (
            "café", "thé", "chocolat", "bonbons", "biscuits", "épices", "bio", "sachet",
            "capsules", "miel", "confiserie", "gourmand", "saveur", "100g"
        ),
        ("coffee", "tea", "chocolate", "candy", "organic"),
        ("kaffee", "tee", "schokolade", "süßigkeiten"),
    ),
    2060: ClassWords(
        "maison",
        (
            "décoration", "lampe", "cadre", "sticker", "mural", "vase", "bougie", "miroir",
            "led", "guirlande", "horloge", "noël", "tableau", "toile"
        ),
        ("decor", "lamp", "frame", "wall", "candle"),
        ("deko", "lampe", "rahmen", "kerze"),
    ),
    2220: ClassWords(
        "maison",
        (
            "chien", "chat", "collier", "laisse", "gamelle", "niche", "arbre", "griffoir",
            "litière", "croquettes", "animal", "harnais", "aquarium", "cage"
        ),
        ("dog", "cat", "pet", "leash", "collar"),
        ("hund", "katze", "leine", "halsband"),
    ),
    2280: ClassWords(
        "livres",
        (
            "magazine", "revue", "journal", "numéro", "n°", "mensuel", "hebdomadaire", "presse",
            "abonnement", "spécial", "dossier", "mars", "octobre", "parution"
        ),
        ("magazine", "issue", "journal", "weekly", "press"),
        ("zeitschrift", "ausgabe", "zeitung", "heft"),
    ),
    2403: ClassWords(
        "livres",
        (
            "lot", "bd", "bandes", "dessinées", "mangas", "tomes", "série", "intégrale",
            "albums", "volumes", "complète", "astérix", "tintin", "collection"
        ),
        ("lot", "comics", "volumes", "series", "set"),
        ("sammlung", "comics", "bände", "serie"),
    ),
    2462: ClassWords(
        "jeux_video",
        (
            "occasion", "jeu", "ps4", "xbox", "one", "switch", "wii", "testé", "fonctionne",
            "sans", "boîte", "ds", "3ds", "complet"
        ),
        ("used", "game", "tested", "works", "preowned"),
        ("gebraucht", "spiel", "getestet", "funktioniert"),
    ),
    2522: ClassWords(
        "bureau",
        (
            "stylo", "cahier", "classeur", "agenda", "carnet", "feutres", "crayons", "ramette",
            "enveloppes", "trousse", "calculatrice", "étiquettes", "bloc", "notes"
        ),
        ("pen", "notebook", "binder", "planner", "pencil"),
        ("stift", "heft", "ordner", "kalender"),
    ),
    2582: ClassWords(
        "jardin",
        (
            "salon", "parasol", "transat", "bain", "soleil", "hamac", "pergola", "tonnelle",
            "fauteuil", "résine", "tressée", "aluminium", "teck", "banc"
        ),
        ("patio", "parasol", "lounger", "hammock", "gazebo"),
        ("gartenmöbel", "sonnenschirm", "liege", "pavillon"),
    ),
    2583: ClassWords(
        "jardin",
        (
            "piscine", "spa", "filtration", "pompe", "chlore", "bâche", "liner", "robot",
            "skimmer", "hors-sol", "échelle", "jacuzzi", "traitement", "eau"
        ),
        ("pool", "spa", "pump", "filter", "cover"),
        ("pool", "pumpe", "filter", "whirlpool"),
    ),
    2585: ClassWords(
        "jardin",
        (
            "tondeuse", "taille-haie", "sécateur", "arrosage", "tuyau", "râteau", "pelle",
            "débroussailleuse", "souffleur", "outil", "pulvérisateur", "brouette", "gazon",
            "bêche"
        ),
        ("mower", "hose", "trimmer", "tool", "rake"),
        ("rasenmäher", "schlauch", "werkzeug", "rechen"),
    ),
    2705: ClassWords(
        "livres",
        (
            "neuf", "roman", "essai", "biographie", "guide", "cuisine", "poésie", "auteur",
            "éditeur", "parution", "récit", "thriller", "policier", "jeunesse"
        ),
        ("book", "new", "novel", "guide", "biography"),
        ("buch", "neu", "roman", "ratgeber"),
    ),
    2905: ClassWords(
        "jeux_video",
        (
            "pc", "téléchargement", "steam", "clé", "code", "windows", "dlc", "digital",
            "licence", "activation", "mac", "online", "extension", "édition"
        ),
        ("pc", "download", "steam", "key", "digital"),
        ("pc", "download", "schlüssel", "digital"),
    ),
}
# fmt: on

# Words any product may carry: they dilute the signal as real listings do.
FILLER_FR: Final[tuple[str, ...]] = (
    "neuf",
    "qualité",
    "marque",
    "taille",
    "couleur",
    "noir",
    "blanc",
    "rouge",
    "bleu",
    "vert",
    "grand",
    "petit",
    "modèle",
    "original",
    "lot",
    "prix",
    "cœur",
    "œuvre",
    "idéal",
    "cadeau",
    "livraison",
    "rapide",
    "authentique",
    "pratique",
    "élégant",
    "solide",
    "léger",
    "nouveau",
)
FILLER_EN: Final[tuple[str, ...]] = (
    "new",
    "quality",
    "brand",
    "size",
    "color",
    "black",
    "white",
    "great",
    "best",
    "original",
)
FILLER_DE: Final[tuple[str, ...]] = (
    "neu",
    "qualität",
    "marke",
    "größe",
    "farbe",
    "schwarz",
    "weiß",
    "original",
    "für",
    "mit",
)

# Description sentence templates; {c} class word, {f} family word, {x} filler word.
SENTENCES_FR: Final[tuple[str, ...]] = (
    "Ce {c} {x} est idéal pour la {f}.",
    "{C} {c} de {x} qualité, parfait pour {f}.",
    "Caractéristiques : {c}, {c}, {x}.",
    "Produit {x} en très bon état, {c} et {f}.",
    "Livré avec {c} et {c}.",
    "Dimensions : {n} x {n} cm. Matière : {x}.",
    "Un {c} {x} qui plaira à toute la {f}.",
    "Référence {ref} - {c} {f}.",
)
SENTENCES_EN: Final[tuple[str, ...]] = (
    "This {c} is {x} and {c}.",
    "Features: {c}, {c}, {x}.",
    "Includes {c} and {x} {c}.",
)
SENTENCES_DE: Final[tuple[str, ...]] = (
    "Dieses {c} ist {x} und {c}.",
    "Eigenschaften: {c}, {c}, {x}.",
    "Mit {c} und {x} {c}.",
)
